import { render } from "preact";
import { useEffect, useState } from "preact/hooks";
import { answer, api, type OperationsStatus, session, whenSignedOut } from "./api.ts";
import { href, useRoute } from "./hooks.ts";
import "./style.css";
import { DeadLetterView, DeadLettersView } from "./views/dead-letters.tsx";
import { FindOrdersView } from "./views/orders.tsx";
import { OverviewView } from "./views/overview.tsx";
import { ReconciliationView } from "./views/reconciliation.tsx";
import { SagasView } from "./views/sagas.tsx";
import { SignIn } from "./views/sign-in.tsx";
import { TimelineView } from "./views/timeline.tsx";

const SECTIONS = [
  { path: "", label: "Overview" },
  { path: "orders", label: "Orders" },
  { path: "sagas", label: "Sagas" },
  { path: "dead-letters", label: "Dead letters" },
  { path: "reconciliation", label: "Reconciliation" },
] as const;

function Page() {
  const { path, query } = useRoute();
  const [section, id] = path;
  // Keyed by what they show: a view's own state (an action's answer, a page cursor) never carries over to another.
  if (section === "orders" && id) return <TimelineView key={id} orderId={id} />;
  if (section === "orders") return <FindOrdersView query={query.get("q") ?? ""} />;
  if (section === "sagas") return <SagasView key={query.get("state")} state={query.get("state") ?? "running"} />;
  if (section === "dead-letters" && id) return <DeadLetterView key={id} id={id} />;
  if (section === "reconciliation") return <ReconciliationView />;
  if (section === "dead-letters") return <DeadLettersView key={query.get("status")} status={query.get("status") ?? "open"} />;
  return <OverviewView />;
}

function App() {
  const [operator, setOperator] = useState<OperationsStatus["operator"] | null>(null);
  const [signedOutBecause, setSignedOutBecause] = useState<string | undefined>();
  const { path } = useRoute();

  const signOut = (reason?: string) => {
    session.signOut();
    setOperator(null);
    setSignedOutBecause(reason);
  };
  useEffect(() => {
    whenSignedOut((reason) => signOut(`Signed out: ${reason}`));
    // A token kept from earlier in this tab: check it is still good before showing anything.
    if (session.token()) answer(api().GET("/api/v1/admin/status")).then((status) => setOperator(status.operator), () => signOut());
  }, []);

  if (!operator) return <SignIn reason={signedOutBecause} onSignedIn={(status) => setOperator(status.operator)} />;
  return (
    <div class="shell">
      <header>
        <a class="brand" href={href()}>
          Orderly <span>console</span>
        </a>
        <nav>
          {SECTIONS.map((s) => (
            <a key={s.path} href={href(s.path)} class={(path[0] ?? "") === s.path ? "active" : ""}>
              {s.label}
            </a>
          ))}
        </nav>
        <div class="operator">
          <span data-testid="operator">
            {operator.userId} · tenant {operator.tenantId}
          </span>
          <button type="button" class="quiet" onClick={() => signOut()}>
            Sign out
          </button>
        </div>
      </header>
      <main>
        <Page />
      </main>
    </div>
  );
}

render(<App />, document.getElementById("app")!);
