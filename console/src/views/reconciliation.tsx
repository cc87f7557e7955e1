import { useState } from "preact/hooks";
import { answer, api, type ReconciliationRun } from "../api.ts";
import { time } from "../format.ts";
import { href, useLoad } from "../hooks.ts";
import { Loading } from "./overview.tsx";

/** The latest reconciliation runs and what they found for this tenant, and a run on demand. */
export function ReconciliationView() {
  const runs = useLoad(() => answer(api().GET("/api/v1/admin/reconciliation")), []);
  const [fresh, setFresh] = useState<ReconciliationRun | undefined>();
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<string | undefined>();
  const shown = fresh ? [fresh, ...(runs.data?.runs ?? []).filter((r) => r.scope !== fresh.scope)] : runs.data?.runs;

  const runNow = async () => {
    setBusy(true);
    setError(undefined);
    try {
      setFresh(await answer(api().POST("/api/v1/admin/reconciliation")));
    } catch (failure) {
      setError((failure as Error).message);
    } finally {
      setBusy(false);
    }
  };

  return (
    <section>
      <h2>Reconciliation</h2>
      <p class="muted">The checks of stock, money, coupons and orders against each other, every 10 minutes. Findings are for an operator: nothing is changed here.</p>
      <button type="button" disabled={busy} onClick={runNow}>
        {busy ? "Running…" : "Run now"}
      </button>
      {error && (
        <p class="error" role="alert">
          {error}
        </p>
      )}
      {!shown ? (
        <Loading error={runs.error} />
      ) : shown.length === 0 ? (
        <p class="muted">No run yet.</p>
      ) : (
        shown.map((run) => (
          <div key={run.id} data-testid="run">
            <h3>
              {run.scope} · {time(run.finishedAt)}
            </h3>
            {run.findings.length === 0 ? (
              <p class="ok-line">All {run.checks.length} checks hold.</p>
            ) : (
              <table data-testid="findings">
                <thead>
                  <tr>
                    <th>Check</th>
                    <th>About</th>
                    <th>What was wrong</th>
                    <th>Done</th>
                  </tr>
                </thead>
                <tbody>
                  {run.findings.map((f, i) => (
                    <tr key={i}>
                      <td>{f.check}</td>
                      <td class="mono">{f.subject.startsWith("ord_") ? <a href={href("orders", f.subject)}>{f.subject}</a> : f.subject}</td>
                      <td>{f.detail}</td>
                      <td>{f.repaired ? "repaired" : "for an operator"}</td>
                    </tr>
                  ))}
                </tbody>
              </table>
            )}
          </div>
        ))
      )}
    </section>
  );
}
