"""The outbound queue (docs/queue.md): durable rows (``store``), the delivery worker
(``delivery``), routes to peers (``routes``) and the client side of mutual TLS (``client_tls``).

Apart from ``smtp/``, which holds the listeners: the queue is a worker of the core, fed by the
acceptance path (``ops/acceptance.py``) inside its transaction, and it speaks SMTP only as a
client.
"""
