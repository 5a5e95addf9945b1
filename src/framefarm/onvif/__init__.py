"""The ONVIF pieces framefarm serves: SOAP 1.2 envelopes and faults, WS-Security logins, event messages and
PullPoint subscriptions (no maintained Python library serves ONVIF; lxml builds and reads the XML)."""
