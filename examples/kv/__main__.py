"""A sharded key-value store: 3 shards keyed by request["key"], each keeping its keys on disk.

    metaparticle run examples/kv
    metaparticle call http://127.0.0.1:8080 '{"op": "put", "key": "alice", "value": {"age": 30}}'
    metaparticle call http://127.0.0.1:8080 '{"op": "get", "key": "alice"}'

Locally the data lives in .metaparticle/state/kv/kv-shard-<i> (kept across runs; removed by
`metaparticle delete . --target local`); on Docker in a volume per shard; on Kubernetes in a
PersistentVolumeClaim per shard (a StatefulSet each).
"""

import pulumi

import metaparticle_pulumi as mp
from store import handle

config = pulumi.Config()
kv = mp.Shard(
    "kv",
    function=handle,
    shards=config.get_int("shards") or 3,
    key="key",
    storage=config.get("storage") or "1Gi",
    storage_class=config.get("storageClass"),
    reshard=config.get_bool("reshard") or False,
)
pulumi.export("url", kv.url)
pulumi.export("grpc_url", kv.grpc_url)
