"""Every private or version-specific vendor API the platform touches, in one place.

One module per vendor; each function says which installed version it was checked against
(``CHECKED``), and ``tests/unit/test_compat.py`` fails, naming the module to re-check, when the
installed version moves or the private name is gone. Nothing outside this package may use a
vendor's private name (``tests/unit/test_no_private_vendor_api.py`` reads every module).
Import the vendor module you need (``forge_ray.compat.ray_serve`` …): this ``__init__`` stays
empty so importing one vendor's shim never imports another vendor.
"""
