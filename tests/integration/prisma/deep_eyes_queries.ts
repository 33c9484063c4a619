// Deep Eyes' four example queries through the Prisma client generated from
// schema/prisma/schema.prisma, run by tests/integration/test_prisma.py. Prints one JSON object.
// Usage: DATABASE_URL=postgresql://... APPLICATION_ID=... tsx deep_eyes_queries.ts
import { PrismaPg } from "@prisma/adapter-pg";
import { PrismaClient } from "./generated/client";

const HOUR_MS = 3_600_000;

function plain(_key: string, value: unknown): unknown {
  if (typeof value === "bigint") return value.toString();
  if (value instanceof Uint8Array) return Buffer.from(value).toString("hex");
  return value;
}

async function main(): Promise<void> {
  const applicationId = process.env.APPLICATION_ID;
  if (!process.env.DATABASE_URL || !applicationId) {
    throw new Error("set DATABASE_URL and APPLICATION_ID");
  }
  const adapter = new PrismaPg({ connectionString: process.env.DATABASE_URL });
  const prisma = new PrismaClient({ adapter });
  const now = Date.now();
  try {
    // 1. Traces of one application in the last hour, newest first.
    const traces = await prisma.trace.findMany({
      where: { applicationId, startTime: { gt: new Date(now - HOUR_MS) } },
      orderBy: { startTime: "desc" },
    });
    // 2. Metrics of the last 24 hours, newest first.
    const metrics = await prisma.metric.findMany({
      where: { timestamp: { gt: new Date(now - 24 * HOUR_MS) } },
      orderBy: { timestamp: "desc" },
    });
    // 3. Hourly rollups of the last 7 days (the current hour included).
    const hourly = await prisma.metricHourly.findMany({
      where: { bucket: { gt: new Date(now - 7 * 24 * HOUR_MS) } },
      orderBy: { bucket: "desc" },
    });
    // 4. Active alerts, most severe first (the enum sorts by declaration order).
    const alerts = await prisma.alert.findMany({
      where: { status: "ACTIVE" },
      orderBy: [{ severity: "desc" }, { createdAt: "desc" }],
      include: { application: true },
    });
    const application = await prisma.application.findUnique({
      where: { id: applicationId },
      include: { keys: { select: { prefix: true, revokedAt: true } } },
    });
    process.stdout.write(
      JSON.stringify({ traces, metrics, hourly, alerts, application }, plain) + "\n",
    );
  } finally {
    await prisma.$disconnect();
  }
}

main().catch((error: unknown) => {
  process.stderr.write(`${error instanceof Error ? error.stack : String(error)}\n`);
  process.exit(1);
});
