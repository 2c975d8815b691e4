"""`cnnviewer.show(model)`: the window opened from a Python session (a script, IPython, Jupyter).

`viewer` and `loop` run on the caller's (GUI) thread and never import torch; `adopt` and `inputs`
run on the engine's job thread, where torch lives. Kept empty so importing one part loads no other.
"""
