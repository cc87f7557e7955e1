import { pino } from "pino";
import { expect, it } from "vitest";
import { loadConfig } from "../src/config.ts";
import type { Bus, BusTopologyEntry } from "../src/kit/bus.ts";
import { BUS_CONSUMERS, BUS_TOPOLOGY, createServices } from "../src/services.ts";
import { openTestPglite } from "./support/databases.ts";
import { TEST_SECRETS } from "./support/harness.ts";

const sorted = (entries: readonly BusTopologyEntry[]) =>
  entries.map((e) => ({ consumer: e.consumer, topics: [...e.topics].sort() })).sort((a, b) => a.consumer.localeCompare(b.consumer));

it("BUS_TOPOLOGY names every consumer the split services subscribe, with exactly their topics", async () => {
  const database = await openTestPglite();
  const subscribed: BusTopologyEntry[] = [];
  const recording: Bus = {
    publish: async () => {},
    subscribe: async (s) => void subscribed.push({ consumer: s.consumer, topics: [...s.topics] }),
    ping: async () => {},
    close: async () => {},
  };
  const services = createServices({ config: loadConfig({}), database, secrets: TEST_SECRETS, log: pino({ level: "silent" }), bus: recording });
  try {
    await services.start();
  } finally {
    await services.close();
    await database.close();
  }
  expect(sorted(BUS_TOPOLOGY)).toEqual(sorted(subscribed));
  expect([...BUS_CONSUMERS].sort()).toEqual(subscribed.map((s) => s.consumer).sort());
});
