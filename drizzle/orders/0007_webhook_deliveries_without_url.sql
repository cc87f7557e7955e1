-- A delivery is sent to its endpoint's current URL (a retry follows a changed endpoint): the copy made at fan-out was never read.
ALTER TABLE "webhook_deliveries" DROP COLUMN "url";