"""The functions of the composition example: a user profile store, a search leaf, and an API
function that calls both patterns through `ctx`."""

CORPUS = [
    "pulumi deploys infrastructure from real code",
    "metaparticle makes distributed patterns one line of code",
    "scatter gather fans a request out to every leaf",
    "a shard owns the keys that consistent hashing gives it",
]
PROFILES = {"alice": {"name": "Alice", "likes": "pulumi"}, "bob": {"name": "Bob", "likes": "shard"}}


def profile(request, ctx):
    """A shard of the user store: the profile of `request["user"]`."""
    found = PROFILES.get(request["user"])
    return {"user": request["user"], "profile": found, "shard": ctx.index}


def search_leaf(request, ctx):
    word = str(request.get("q", "")).lower()
    return [i for i, doc in enumerate(CORPUS) if i % ctx.count == ctx.index and word in doc.split()]


def merge(results):
    return sorted(i for hits in results for i in hits)


def api(request, ctx):
    """Looks the user up, then searches for what they like: two patterns, one request deadline."""
    user = ctx.call("users", {"user": request["user"]})
    if user["profile"] is None:
        return {"user": request["user"], "error": "no such user"}
    hits = ctx.call("search", {"q": user["profile"]["likes"]})
    return {"user": user["profile"]["name"], "likes": user["profile"]["likes"], "documents": [CORPUS[i] for i in hits]}
