"""Outreach: announce an approved session on every channel of its plan, and follow it through its life.

stage.py is the router, with four durable consumers:

- `outreach` (on `impromptu.sessions.scheduled`) fans a session out into one AnnouncementDue per channel on
  `impromptu.outreach.due`, so a rate-limited channel waits alone while the others post.
- `outreach-followups` (on `impromptu.proposals.transitions`) announces "starting now" when the session goes live
  and a cancellation (deleting the post where the API allows) when a scheduled session is cancelled;
  `outreach-recordings` (on `impromptu.library.entries`) announces the recording with its library link. Each is
  due on every channel of the plan: the post step orders it after that channel's announcement (waits while the
  announcement is not settled, skips with the reason when it was not posted).
- `outreach-post` (on `impromptu.outreach.due`) renders and posts once (records.py) and emits an OutreachResult
  on `impromptu.outreach.results`. 429 waits as long as the provider asks; a refused credential marks the channel
  broken and tells people (health.py); every failure that needs a person goes to the dead letters with its reason.
"""
