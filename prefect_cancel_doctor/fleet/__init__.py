"""The fleet: the event protocol of published verdicts (`protocol`: names, resources, the payload
written and read by one type), publishing them (`publish`) and a doctor on every host (`agent`)."""
