"""IMAP for mail clients (docs/imap.md): pymap behind an adapter over our store.

``service`` starts the listeners; ``server`` is the connection (TLS first, limits, timeouts);
``login`` checks passwords and picks the mailbox; ``backend`` implements pymap's backend
interfaces over :mod:`mssante.ops.folders`; ``search`` translates SEARCH keys; ``bus`` carries
"this mailbox changed" to IDLE sessions.
"""

from mssante.imap.service import start_imap

__all__ = ["start_imap"]
