"""A CourierGateway: its spec, the objects it runs, its keys, its scaling, its reconciliation."""
