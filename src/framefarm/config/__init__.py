"""Pipeline configuration: YAML with positions, env expansion, kind registry, validation, routing."""
