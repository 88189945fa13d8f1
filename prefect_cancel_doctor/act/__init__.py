"""Acting on verdicts: `resolve` (plan, re-check, signal, verify, set the state, log),
`resolving` (a resolve as a person asks for it: its confirmations, the orphans of a scan, the
grace period counted down) and `watch` (follow runs until they leave Cancelling)."""
