"""The ECS kind: a run in a task of prefect-aws's ECS worker (`infrastructure_pid`
"<cluster>::<task ARN>")."""
