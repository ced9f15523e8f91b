"""A 15-task demo workload mirroring the original application (see ``tasks.py``)."""
