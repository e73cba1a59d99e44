"""What every stage spec has: a kind, a run name, a description and a seed."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import ClassVar

from forge_ray.spec.typed import opt

#: a run name: one plain path component under the storage root (``forge_ray.runs`` enforces it)
RUN_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")


@dataclass(kw_only=True)
class StageSpec:
    """Fields every stage has."""

    kind: str = opt(help="stage kind")
    name: str = opt(help="run name: the run directory under the storage root; letters, digits, '-', '_', '.'")
    description: str = opt("", "free text shown in run tables")
    seed: int = opt(0, "seed for every random choice in the stage", ge=0)

    KIND: ClassVar[str] = ""
    #: fields whose value names another run (an input); validated and recorded as parents
    INPUTS: ClassVar[tuple[str, ...]] = ()

    def check(self):
        if self.kind != self.KIND:
            yield "kind", f"must be {self.KIND!r} for this spec class, got {self.kind!r}", ""
        if not RUN_NAME.match(self.name or ""):
            yield "name", f"{self.name!r} is not a valid run name", "use letters, digits, '-', '_' or '.', ≤100 chars"

    def input_runs(self) -> dict[str, str]:
        """Input field → run name, for the inputs that are set (sources naming a run included, as
        ``sources[0].run``)."""
        return {**{f: getattr(self, f) for f in self.INPUTS if getattr(self, f)}, **source_runs(self)}


def source_runs(spec, prefix: str = "") -> dict[str, str]:
    """``field[i].run`` → run name for every source of ``spec`` (or of a section in it, e.g.
    ``retrieval.documents[0].run``) that reads an earlier run's corpus."""
    import dataclasses

    from forge_ray.spec.sections import SourceSpec

    out = {}
    for f in dataclasses.fields(spec):
        value = getattr(spec, f.name)
        if dataclasses.is_dataclass(value) and not isinstance(value, (SourceSpec, StageSpec)):
            out.update(source_runs(value, f"{prefix}{f.name}."))
        for i, src in enumerate(value if isinstance(value, list) else []):
            if isinstance(src, SourceSpec) and src.run:
                out[f"{prefix}{f.name}[{i}].run"] = src.run
    return out
