import { type ChildProcess, execFileSync, spawn } from "node:child_process";
import { existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { Socket } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { freePort } from "./ports.ts";

/** Debian's OpenLDAP server (`apt-get install slapd ldap-utils`; .ci/run installs it). A missing one fails, never skips. */
export const SLAPD = "/usr/sbin/slapd";
const SLAPADD = "/usr/sbin/slapadd";

export const SUFFIX = "dc=orderly,dc=test";
export const READER = { dn: `cn=orderly-reader,${SUFFIX}`, password: "reader-secret" };

/** The test directory: people in ou=people (tenant in `o`), groups in ou=groups. */
export interface Person {
  uid: string;
  password: string;
  tenant: string;
  groups: string[];
}

function ldif(people: Person[]): string {
  const groups = [...new Set(people.flatMap((p) => p.groups))];
  const entries = [
    `dn: ${SUFFIX}\nobjectClass: dcObject\nobjectClass: organization\ndc: orderly\no: Orderly tests`,
    `dn: ${READER.dn}\nobjectClass: organizationalRole\nobjectClass: simpleSecurityObject\ncn: orderly-reader\nuserPassword: ${READER.password}`,
    `dn: ou=people,${SUFFIX}\nobjectClass: organizationalUnit\nou: people`,
    `dn: ou=groups,${SUFFIX}\nobjectClass: organizationalUnit\nou: groups`,
    ...people.map(
      (p) =>
        `dn: uid=${p.uid},ou=people,${SUFFIX}\nobjectClass: inetOrgPerson\nuid: ${p.uid}\ncn: ${p.uid}\nsn: ${p.uid}\no: ${p.tenant}\nuserPassword: ${p.password}`,
    ),
    ...groups.map(
      (g) =>
        `dn: cn=${g},ou=groups,${SUFFIX}\nobjectClass: groupOfNames\ncn: ${g}\n${people
          .filter((p) => p.groups.includes(g))
          .map((p) => `member: uid=${p.uid},ou=people,${SUFFIX}`)
          .join("\n")}`,
    ),
  ];
  return `${entries.join("\n\n")}\n`;
}

const answers = (port: number) =>
  new Promise<boolean>((resolve) => {
    const socket = new Socket();
    socket.once("connect", () => (socket.destroy(), resolve(true)));
    socket.once("error", () => resolve(false));
    socket.connect(port, "127.0.0.1");
  });

export interface Directory {
  url: string;
  /** Stops the server (the data stays) and starts it again on the same port. */
  stop(): Promise<void>;
  start(): Promise<void>;
  close(): Promise<void>;
}

/**
 * A real slapd of the test's own: its own slapd.conf (mdb database, the readers' ACLs), loaded with
 * `people` by slapadd, listening on a free loopback port, stopped and removed by `close()`.
 */
export async function startDirectory(people: Person[]): Promise<Directory> {
  if (!existsSync(SLAPD)) throw new Error(`${SLAPD} is missing: install Debian's slapd and ldap-utils (apt-get install -y slapd ldap-utils), as .ci/run does`);
  const dir = mkdtempSync(join(tmpdir(), "orderly-slapd-"));
  mkdirSync(join(dir, "data"));
  const conf = join(dir, "slapd.conf");
  writeFileSync(
    conf,
    [
      ...["core", "cosine", "inetorgperson"].map((schema) => `include /etc/ldap/schema/${schema}.schema`),
      "modulepath /usr/lib/ldap",
      "moduleload back_mdb",
      `pidfile ${join(dir, "slapd.pid")}`,
      "database mdb",
      `directory ${join(dir, "data")}`,
      `suffix "${SUFFIX}"`,
      `rootdn "cn=admin,${SUFFIX}"`,
      "rootpw admin-secret",
      "maxsize 10485760",
      // Passwords: a bind may compare them, nobody reads them. Everything else: the reader account only.
      "access to attrs=userPassword by anonymous auth by self auth by * none",
      `access to * by dn.exact="${READER.dn}" read by * none`,
      "",
    ].join("\n"),
  );
  const data = join(dir, "people.ldif");
  writeFileSync(data, ldif(people));
  execFileSync(SLAPADD, ["-f", conf, "-l", data], { stdio: "pipe" });

  const port = await freePort();
  let child: ChildProcess | undefined;
  const directory: Directory = {
    url: `ldap://127.0.0.1:${port}`,
    async start() {
      // -d 0: stay in the foreground (the test owns the process), logging nothing.
      child = spawn(SLAPD, ["-f", conf, "-h", `ldap://127.0.0.1:${port}/`, "-d", "0"], { stdio: "ignore" });
      const deadline = Date.now() + 10_000;
      while (!(await answers(port))) {
        if (child.exitCode !== null || Date.now() > deadline) throw new Error(`slapd did not start on port ${port}`);
        await new Promise((r) => setTimeout(r, 50));
      }
    },
    async stop() {
      if (!child || child.exitCode !== null) return;
      const gone = new Promise((resolve) => child!.once("exit", resolve));
      child.kill("SIGTERM");
      await gone;
    },
    async close() {
      await directory.stop();
      rmSync(dir, { recursive: true, force: true });
    },
  };
  await directory.start();
  return directory;
}
