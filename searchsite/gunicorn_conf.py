"""gunicorn settings for the metrics of several web processes (`gunicorn -c searchsite/gunicorn_conf.py`):
the Procfile, the image and bench/load.py start gunicorn with it.

prometheus_client writes each process's samples to files in PROMETHEUS_MULTIPROC_DIR, and
/metrics sums them (searchsite/metrics.py). The folder must start without samples (those of an earlier run
would be added to this one's) and a process that exits must be marked dead, or its gauges would
be summed as if it still ran. The folder defaults to var/prometheus in the checkout.
"""
import os
from pathlib import Path

_folder = Path(os.environ.setdefault("PROMETHEUS_MULTIPROC_DIR",
                                     str(Path(__file__).resolve().parent.parent / "var" / "prometheus")))


def on_starting(server):
    _folder.mkdir(parents=True, exist_ok=True)
    for samples in _folder.glob("*.db"):  # prometheus_client's files only
        samples.unlink()


def child_exit(server, worker):
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)
