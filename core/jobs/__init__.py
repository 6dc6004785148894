"""Background training jobs: one at a time, each in its own process, readable by any page at any time.

``core.jobs.jobs`` starts, lists and cancels jobs; ``core.jobs.runner`` is the process behind one job;
``core.jobs.lock`` is the operating-system lock that makes a job the only one; ``core.jobs.records`` holds
what a job folder stores; ``core.jobs.progress`` turns a job's events into what a page draws;
``core.jobs.resume`` continues a job that ended unfinished from its run's saved state.
"""
