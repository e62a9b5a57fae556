"""The rendezvous handler: membership, ranks, timeouts and elasticity over any backend."""
