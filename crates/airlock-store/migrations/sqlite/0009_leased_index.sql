-- Work in flight (leased) is found without reading the rest: next_due.
CREATE INDEX requests_leased ON requests (lease_until) WHERE lease_until IS NOT NULL;
