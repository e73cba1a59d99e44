"""Image tasks in `kind: eval`: rows with an image are checked early (file:line), all or none
of a task's rows have one, and VQA files (``question``) read as tasks."""

import json

import pytest
from PIL import Image

from forge_ray.eval.tasks import TaskError, has_images, load_rows
from forge_ray.spec.stages import TaskSpec


def _task(tmp_path, rows, **kw):
    (tmp_path / "images").mkdir(exist_ok=True)
    Image.new("RGB", (8, 8), "red").save(tmp_path / "images" / "a.png")
    path = tmp_path / "vqa.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return TaskSpec(name="vqa", path=str(path), **kw)


def test_vqa_rows_read_as_an_image_task(tmp_path):
    task = _task(tmp_path, [{"image": "images/a.png", "question": "What colour is it?", "answer": "red", "type": "colour"}])
    shots, rows = load_rows(task)
    assert has_images(task) and shots == []
    assert rows == [{"prompt": "What colour is it?", "image": "images/a.png", "answer": "red", "type": "colour", "line": 1}]


def test_a_missing_image_is_named_with_file_and_line(tmp_path):
    task = _task(tmp_path, [{"image": "images/a.png", "prompt": "q", "answer": "a"},
                            {"image": "images/nope.png", "prompt": "q", "answer": "a"}])
    with pytest.raises(TaskError, match=r"vqa.jsonl:2: image 'images/nope.png' not found"):
        load_rows(task)


def test_a_task_is_all_images_or_none(tmp_path):
    task = _task(tmp_path, [{"image": "images/a.png", "prompt": "q", "answer": "a"}, {"prompt": "q", "answer": "a"}])
    with pytest.raises(TaskError, match=r"vqa.jsonl:2: every row of a task has an 'image', or none does"):
        load_rows(task)
    assert not has_images(_task(tmp_path, [{"prompt": "q", "answer": "a"}]))
