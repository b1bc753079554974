"""Ray's routine log lines are filtered, lines of substance are not."""

import logging

from pipelines.common.runtime import quiet_ray_logging


class _Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def test_routine_ray_lines_are_dropped_and_the_rest_kept():
    quiet_ray_logging()
    collect = _Collect()
    progress = logging.getLogger("ray.data._internal.progress.logging_progress")
    train_storage = logging.getLogger("ray.train.v2._internal.execution.storage")
    for logger in (progress, train_storage):  # Ray's loggers do not propagate to the root logger
        logger.addHandler(collect)
        logger.setLevel(logging.INFO)
    try:
        progress.info("======= Running Dataset: d =======")
        progress.info("MapBatches(ReadImages): 0/1")
        progress.info("Total Progress: 3/4")
        train_storage.info("Checkpoint successfully created at: /x")
        train_storage.warning("Checkpoint upload failed: disk full")
    finally:
        for logger in (progress, train_storage):
            logger.removeHandler(collect)
            logger.setLevel(logging.NOTSET)
    assert collect.messages == ["Total Progress: 3/4", "Checkpoint upload failed: disk full"]
