"""Tickets under SLA: everything a technician's working day runs on, beside the remote part.

``lifecycle``
    the ticket state machine as one table (new → open → waiting → resolved → closed,
    reopen), support levels L1-L4, which actions count as a first response.
``calendar``
    business-hours calendars (24/7, or hours in a time zone with holidays) and the
    arithmetic on them: add working time to an instant, measure working time between two.
``sla``
    the SLA policy file (TOML) and the two clocks of a ticket (first response,
    resolution) with deadlines and states: on track, at risk, breached, met, paused.
``kpi``
    the KPI report: opened, resolved, response and resolution times, SLA compliance,
    first-contact resolution, reopen rate, customer satisfaction.
``webhooks``
    hand-off to an existing helpdesk: signed payloads, the delivery worker over the
    transactional outbox, retries with backoff.
``desk``
    the controller's ticket service: applies lifecycle changes through the store (one
    transaction with the event and its outbox rows), audits what is accountable, runs
    the SLA monitor and the webhook worker.

Everything but ``desk`` and ``webhooks`` is pure: no database, no network, no clock
reads; callers pass ``now``.
"""
