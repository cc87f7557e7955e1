import { answer, api } from "../api.ts";
import { duration } from "../format.ts";
import { href, useLoad } from "../hooks.ts";

/** Health and backlog at a glance, refreshed every 5 s. */
export function OverviewView() {
  const status = useLoad(() => answer(api().GET("/api/v1/admin/status")), [], 5_000);
  if (!status.data) return <Loading error={status.error} />;
  const { checks, backlog, at } = status.data;
  const tiles = [
    { label: "Outbox pending", value: String(backlog.outboxPending), warn: backlog.outboxPending > 0 },
    { label: "Oldest pending message", value: backlog.outboxPending > 0 ? duration(backlog.outboxOldestAgeSeconds * 1000) : "none", warn: backlog.outboxOldestAgeSeconds > 60 },
    { label: "Sagas active", value: String(backlog.sagasActive), link: href("sagas") },
    { label: "Sagas stuck", value: String(backlog.sagasStuck), warn: backlog.sagasStuck > 0, link: `${href("sagas")}?state=stuck` },
    { label: "Dead letters open", value: String(backlog.deadLettersOpen), warn: backlog.deadLettersOpen > 0, link: `${href("dead-letters")}?status=open` },
  ];
  return (
    <section>
      <h2>Overview</h2>
      <h3>Health of this process</h3>
      <ul class="checks" data-testid="checks">
        {Object.entries(checks).map(([name, state]) => (
          <li key={name} class={state === "ok" ? "ok" : "bad"}>
            {name}: {state}
          </li>
        ))}
      </ul>
      <h3>Backlog of this tenant</h3>
      <div class="tiles" data-testid="backlog">
        {tiles.map((tile) => {
          const body = (
            <>
              <strong>{tile.value}</strong>
              <span>{tile.label}</span>
            </>
          );
          return tile.link ? (
            <a key={tile.label} class={`tile ${tile.warn ? "warn" : ""}`} href={tile.link}>
              {body}
            </a>
          ) : (
            <div key={tile.label} class={`tile ${tile.warn ? "warn" : ""}`}>
              {body}
            </div>
          );
        })}
      </div>
      <p class="muted">As of {new Date(at).toLocaleTimeString()}; refreshed every 5 s.</p>
    </section>
  );
}

export function Loading(props: { error?: string | undefined }) {
  return props.error ? (
    <p class="error" role="alert">
      {props.error}
    </p>
  ) : (
    <p class="muted">Loading…</p>
  );
}
