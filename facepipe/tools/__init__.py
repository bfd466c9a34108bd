"""Tools around the job: the run report, erasure (forget), detector evaluation, the demo archive,
warehouse catalog columns."""
