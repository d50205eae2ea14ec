"""Accounting: a durable usage ledger fed by the cluster manager's event stream.

follower.py watches WatchEvents from the last committed sequence (and
relists on OUT_OF_RANGE, reconciles periodically); ledger.py commits each
batch of events, the billed intervals, usage-curve points and instance views
with that sequence in one SQLite transaction; phases.py says which states
are billed; usage.py, curves.py and spans.py answer GetUsage; service.py is
the gRPC face; the typed client the CLI uses is tashi.runtime.accounting_client.
"""
