-- Downstream services' acknowledgements: when a retirement first awaited each service
-- (the ack deadline runs from there), when its webhook was delivered, and who acked.
ALTER TABLE service_ack ADD COLUMN created_at TEXT;
ALTER TABLE service_ack ADD COLUMN acked_by TEXT;
CREATE INDEX service_ack_service_status ON service_ack (service, status);
