"""Executing jobs inside the master: the worker pool and what a job step does.

``workerpool`` is a priority thread pool that knows nothing of jobs; ``processor`` runs a
job's opcodes one step at a time (feedback, cancellation points, results);
``dependencies`` tracks which jobs wait for which; ``waiting`` decides when a
WaitForJobChange waiter has something to hear.

May import the vocabulary and the job model (job, opcodes); not the store, the queue
facade, the cluster, the protocols or programs.
"""
