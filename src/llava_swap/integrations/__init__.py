"""Adapters to the harnesses the field evaluates with: lmms-eval's model plugin and task files.

`lmms_eval_plugin` is what lmms-eval's `lmms_eval.models` entry point names (registered in pyproject.toml; light, it
runs at every lmms-eval start), `lmms_eval_model` the model it loads, `lmms_eval_tasks` the task files `llava-swap
data generate` writes beside a task's data. Nothing here imports lmms-eval unless lmms-eval itself is running.
"""
