"""The project's SQLite ``ENGINE`` (settings.py): Django's backend with this
process's writers queued in arrival order (``upstream.django_sqlite_writer``)."""

from upstream.django_sqlite_writer import DatabaseWrapper, WriterQueue, writer_queue

__all__ = ["DatabaseWrapper", "WriterQueue", "writer_queue"]
