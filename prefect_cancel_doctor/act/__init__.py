"""Acting on verdicts: `resolve` (plan, re-check, signal, verify, set the state, log) and
`watch` (follow runs until they leave Cancelling)."""
