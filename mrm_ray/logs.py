"""What a job prints, and where the rest goes: the console (and `ray job logs`) gets our progress and
evaluation lines, warnings and errors; each process's library chatter (DeepSpeed's engine
configuration, transformers' and Ray Data's INFO lines) goes in full to `{run folder}/logs/{process}.log`
(run_folder.py). Progress bars, which a job log shows as one line per refresh, are off: Ray Data's (per
epoch, from every training worker) and transformers' weight loading.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

CHATTY = ("DeepSpeed", "deepspeed", "transformers", "ray.data", "ray.train", "torch.distributed", "peft")


def no_progress_bars() -> None:
    """Ray Data's progress bars and per-execution banners, and transformers' loading bars, off in this process.

    The driver's DataContext travels with the datasets it builds, so calling this before building
    them silences their executions on every node too.
    """
    import ray.data

    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False
    ctx.enable_operator_progress_bars = False
    ctx.print_on_execution_start = False
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()


class _NotTheBarsWeTurnedOff(logging.Filter):
    """Ray Data's warning that progress bars are off: we turned them off."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(("Progress bars disabled", "Progress bars for operators disabled"))


def route_logs(log_file: Path) -> None:
    """Everything the chatty libraries log, into `log_file` (replacing an earlier run's file in a driver
    that trains several times); only their warnings to the console."""
    log_file.parent.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(log_file, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.routed_by_mrm_ray = True
    for name in CHATTY:
        logger = logging.getLogger(name)
        for old in [h for h in logger.handlers if getattr(h, "routed_by_mrm_ray", False)]:
            logger.removeHandler(old)
            old.close()
        consoles = [h for h in logger.handlers if isinstance(h, logging.StreamHandler)
                    and not isinstance(h, logging.FileHandler)]
        if not consoles:
            consoles = [logging.StreamHandler(sys.stderr)]
            logger.addHandler(consoles[0])
        for console in consoles:
            console.setLevel(logging.WARNING)
            if not any(isinstance(f, _NotTheBarsWeTurnedOff) for f in console.filters):
                console.addFilter(_NotTheBarsWeTurnedOff())
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
        logger.propagate = False  # the root's console would print the INFO lines again
