"""The contract and the plumbing every other package builds on: jobs, results, the rung
base, errors, settings, broker URLs and keys, the record, processes and the fork server,
signals, waiting, and the embedded stack."""
