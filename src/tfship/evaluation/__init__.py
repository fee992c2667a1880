"""The evaluation stage's parts: threshold checks (`checks`); evaluate, gate and report live in
`tfship.evaluate`, `tfship.gate` and `tfship.report`."""
