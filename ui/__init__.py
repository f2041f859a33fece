"""The read-only web dashboard (SPEC §10): pages and a JSON API over the service's queries."""
