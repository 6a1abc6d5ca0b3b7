"""The store's raw SQL, one implementation per database behind one interface.

``Sql()`` opens the implementation of the default connection's database
(``connection.vendor``), as Django picks its own backend: ``base`` holds the
interface and the SQL both share, ``sqlite`` and ``postgresql`` what differs.
"""

from messaging.store.backends.base import MAX_IN_LIST, Sql, aware, chunks
from messaging.store.backends.model_rows import ModelRows

__all__ = ["MAX_IN_LIST", "ModelRows", "Sql", "aware", "chunks"]
