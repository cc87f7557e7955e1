import { useEffect, useState } from "preact/hooks";

/** The data a view loads, its error in words, and a way to load it again (every `refreshMs` if given). */
export function useLoad<T>(load: () => Promise<T>, deps: readonly unknown[], refreshMs?: number) {
  const [state, setState] = useState<{ data?: T; error?: string; loading: boolean }>({ loading: true });
  const [tick, setTick] = useState(0);
  useEffect(() => {
    let live = true;
    setState((previous) => ({ ...previous, loading: true }));
    load().then(
      (data) => live && setState({ data, loading: false }),
      (error: unknown) => live && setState({ error: error instanceof Error ? error.message : String(error), loading: false }),
    );
    return () => {
      live = false;
    };
  }, [...deps, tick]);
  useEffect(() => {
    if (!refreshMs) return;
    const timer = setInterval(() => setTick((n) => n + 1), refreshMs);
    return () => clearInterval(timer);
  }, [refreshMs]);
  return { ...state, reload: () => setTick((n) => n + 1) };
}

/** Where the console is: `#/dead-letters/dl_1?status=open` → ["dead-letters", "dl_1"] and its query. */
export interface Route {
  path: string[];
  query: URLSearchParams;
}

export function useRoute(): Route {
  const [hash, setHash] = useState(location.hash);
  useEffect(() => {
    const changed = () => setHash(location.hash);
    addEventListener("hashchange", changed);
    return () => removeEventListener("hashchange", changed);
  }, []);
  const [path = "", query = ""] = hash.replace(/^#\/?/, "").split("?");
  return { path: path.split("/").filter(Boolean).map(decodeURIComponent), query: new URLSearchParams(query) };
}

/** A link inside the console. */
export const href = (...parts: string[]) => `#/${parts.map(encodeURIComponent).join("/")}`;
