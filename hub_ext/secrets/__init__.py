"""Secret brokers and runtime delivery to users' servers (see docs/secrets.md).

``model`` (names, namespaces, classes), ``embedded`` (AES-GCM in SQLite), ``vault``
(HashiCorp Vault KV v2 with each user's own token), ``policy`` (which classes reach
which profiles and roles), ``tickets`` (single-use claim tickets), ``delivery`` (the
hub's state), ``handlers`` (hub API), ``setup`` (hub configuration), ``spawn``
(spawner hooks), ``cli`` (admin CLI).
"""
