"""The README's "Testing your infrastructure" example holds, run as written (on the shard example)."""

from pathlib import Path

import metaparticle_pulumi as mp
from metaparticle_pulumi import testing

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def handler(request):
    return request


def test_api_has_three_replicas():
    with testing.mocked(target="kubernetes") as stack:
        mp.Spread("api", function=handler, replicas=3)
    (replicas,) = stack.objects(kind="Deployment", name="api-replica")
    assert replicas["spec"]["replicas"] == 3


def test_my_program_declares_a_network_policy_per_role():
    stack = testing.evaluate(EXAMPLES / "shard")
    assert len(stack.objects(kind="NetworkPolicy")) == len(stack.objects(kind="Deployment")) == 4
