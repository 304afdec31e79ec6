"""The Shard benchmark's function: says which shard answered, echoing the key and the padding."""


def owner(request, ctx):
    return {"shard": ctx.index, "user": request.get("user"), "pad": request.get("pad")}
