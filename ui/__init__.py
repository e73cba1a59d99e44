"""The forge-ray web app (Gradio): ``forge ui``. Everything it does goes through
:mod:`forge_ray.api`."""
