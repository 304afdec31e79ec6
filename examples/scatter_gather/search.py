"""A tiny search engine split over leaves: each leaf indexes one partition of the corpus."""

CORPUS = [
    "pulumi deploys infrastructure from real code",
    "metaparticle makes distributed patterns one line of code",
    "scatter gather fans a request out to every leaf",
    "a shard owns the keys that consistent hashing gives it",
    "spread balances every request over replicas",
    "kubernetes runs containers in pods behind services",
    "grpc carries requests between the roles of a pattern",
    "the root merges the hits of every leaf into one answer",
    "code as config: the program is the deployment",
    "health checks tell kubernetes when a pod serves",
    "deadlines keep a slow leaf from holding a request",
    "pulumi preview shows the plan and pulumi destroy removes it",
]


def partition(leaf: int, leaves: int) -> list[tuple[int, str]]:
    """The documents (id, text) that leaf `leaf` of `leaves` holds."""
    return [(i, doc) for i, doc in enumerate(CORPUS) if i % leaves == leaf]


def search_leaf(request, ctx):
    """Finds the documents of this leaf's partition that contain the query word."""
    word = str(request.get("q", "")).lower()
    hits = [{"id": i, "text": doc} for i, doc in partition(ctx.index, ctx.count) if word and word in doc.split()]
    return {"leaf": ctx.index, "hits": hits}


def merge(results):
    """Merges the leaves' hits, ordered by document id, and says which leaves contributed."""
    hits = sorted((hit for result in results for hit in result["hits"]), key=lambda hit: hit["id"])
    return {"hits": hits, "count": len(hits), "leaves": [result["leaf"] for result in results]}
