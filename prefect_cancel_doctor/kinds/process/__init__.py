"""Local processes: located by `infrastructure_pid` or `PREFECT__FLOW_RUN_ID` (`locate`), served
runs found through their Runner (`served`), and telling a flow process from any other (`flow`)."""
