"""Running plans: the executor over the two-phase-commit driver, the coordinator service
(queues, admission, cancellation) and the in-process runtime. The top of the core."""
