"""The run layer: the job (plan, extract, publish, post-stages), the extract chain declared as
steps, and the executors that interpret it (Ray Data, local processes)."""
