import { defineConfig } from "vitest/config";

// Two projects. "main" runs files two at a time. "faults" runs after it, one file at a time: its tests
// stop and restart the machine's real RabbitMQ and PostgreSQL, which would break anything beside them.
// The tests that run the TypeScript compiler (the build, and the Kubernetes manifests checked against
// their types) run there too: the compiler takes both cores for seconds, and beside it a timing-bound
// test (the two-replica cache test, whose Redis commands time out after 250 ms) failed.
export default defineConfig({
  test: {
    globalSetup: ["test/support/global-setup.ts"],
    testTimeout: 60_000,
    hookTimeout: 60_000,
    // expect.poll waits for what comes eventually (a page re-rendered after a request to the
    // database): its default of 1 s is too short for two busy cores.
    expect: { poll: { timeout: 10_000 } },
    projects: [
      {
        extends: true,
        test: {
          name: "main",
          include: ["src/**/*.test.ts", "test/**/*.test.ts"],
          exclude: ["test/faults/**", "test/build.test.ts", "test/deploy.test.ts"],
          // Two cores: PostgreSQL, the test workers and spawned servers share them.
          maxWorkers: 2,
        },
      },
      {
        extends: true,
        test: {
          name: "faults",
          include: ["test/faults/**/*.test.ts", "test/build.test.ts", "test/deploy.test.ts"],
          maxWorkers: 1,
          fileParallelism: false,
          sequence: { groupOrder: 1 },
        },
      },
    ],
  },
});
