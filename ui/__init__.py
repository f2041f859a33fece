"""The read-only web dashboard (docs/api.md): pages and a JSON API over the service's queries."""
