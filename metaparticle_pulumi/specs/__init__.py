"""Per-target specs: pure functions of a Topology and the deployment settings (no Pulumi, no I/O)."""
