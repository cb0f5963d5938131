"""What the API imports to enqueue and read jobs: the part of `workers/` shared with it.

`settings` (what both sides read), `records` (job records in Redis), `queues` (enqueueing),
`objects` (the object directory), `views` (the job JSON clients see) and `hooks` (queueing
a webhook delivery, and which URLs one may go to). Nothing here imports the rest of
`workers/`: the job functions, the worker and the model registry stay out of the API.
"""
