"""Executing jobs inside the master: the worker pool and what a job step does.

``workerpool`` is a priority thread pool that knows nothing of jobs; ``processor`` runs a
job's opcodes one step at a time (feedback, cancellation points, results);
``dependencies`` tracks which jobs wait for which; ``waiting`` decides when a
WaitForJobChange waiter has something to hear; ``commands`` runs command jobs' attempts
on nodes through links (slots, retries, logs, health, fencing), ``placement`` chooses
nodes by tag, ``starttimes`` wakes jobs at their start time, ``services`` is the
master's side of supervised services.

May import the vocabulary and the job model (job, opcodes, commandjob, service); not the
store, exec/ (the runner reaches nodes through links it is given), the queue facade,
the cluster, the protocols or programs.
"""
