package ctlake.hdfs;

import java.io.File;
import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.StandardCopyOption;

import org.apache.hadoop.conf.Configuration;
import org.apache.hadoop.hdfs.MiniDFSCluster;

/**
 * A single-node HDFS (one NameNode, one DataNode) for local runs and tests: Hadoop's MiniDFSCluster.
 *
 * <pre>
 *   java -cp "ctlake-hdfs.jar:JARDIR/*" ctlake.hdfs.CtlakeMiniDfs \
 *       --base DIR --port 8020 --http-port 9870 [--ready FILE]
 * </pre>
 *
 * Everything binds to 127.0.0.1; permissions are off and the replication factor is 1. The file system
 * is formatted only on the first start (when DIR/name-0-1 holds no image), so data survives restarts.
 * When the cluster is up and out of safe mode, the process id is written to the ready file (removed at
 * start); SIGTERM or SIGINT stops the DataNode and the NameNode cleanly (data kept; MiniDFSCluster's own
 * shutdown() would delete the base folder when the JVM exits).
 */
public final class CtlakeMiniDfs {
    private CtlakeMiniDfs() {
    }

    public static void main(String[] args) throws Exception {
        File base = null;
        File ready = null;
        int port = 8020;
        int httpPort = 9870;
        for (int i = 0; i < args.length; i++) {
            String a = args[i];
            String v = i + 1 < args.length ? args[i + 1] : null;
            switch (a) {
                case "--base": base = new File(v).getAbsoluteFile(); i++; break;
                case "--port": port = Integer.parseInt(v); i++; break;
                case "--http-port": httpPort = Integer.parseInt(v); i++; break;
                case "--ready": ready = new File(v).getAbsoluteFile(); i++; break;
                default:
                    System.err.println("usage: CtlakeMiniDfs --base DIR [--port N] [--http-port N] [--ready FILE]");
                    System.exit(2);
            }
        }
        if (base == null) {
            System.err.println("CtlakeMiniDfs: --base DIR is required");
            System.exit(2);
        }
        if (ready != null) {
            Files.deleteIfExists(ready.toPath());
        }
        // format only on the first start: the first name directory has no image yet
        boolean format = !new File(base, "name-0-1/current/VERSION").isFile();

        Configuration conf = new Configuration();
        conf.set(MiniDFSCluster.HDFS_MINIDFS_BASEDIR, base.getPath());
        conf.set("hadoop.tmp.dir", new File(base, "tmp").getPath());
        conf.setBoolean("dfs.permissions.enabled", false);
        conf.setInt("dfs.replication", 1);
        conf.set("dfs.namenode.rpc-bind-host", "127.0.0.1");
        conf.set("dfs.namenode.http-address", "127.0.0.1:" + httpPort);
        conf.set("dfs.datanode.address", "127.0.0.1:0");
        conf.set("dfs.datanode.http.address", "127.0.0.1:0");
        conf.set("dfs.datanode.ipc.address", "127.0.0.1:0");
        conf.set("dfs.datanode.hostname", "127.0.0.1");
        conf.setBoolean("dfs.namenode.datanode.registration.ip-hostname-check", false);
        conf.setInt("dfs.namenode.safemode.extension", 0);

        System.out.println("CtlakeMiniDfs: " + (format ? "formatting a new file system" : "reusing the file system")
                + " under " + base);
        MiniDFSCluster cluster = new MiniDFSCluster.Builder(conf, base)
                .nameNodePort(port)
                .nameNodeHttpPort(httpPort)
                .numDataNodes(1)
                .format(format)
                .manageNameDfsDirs(true)
                .manageDataDfsDirs(true)
                .checkDataNodeAddrConfig(true)
                .waitSafeMode(true)
                .build();
        cluster.waitActive();
        // SIGTERM/SIGINT: shut the cluster down before the JVM's shutdown starts (a plain shutdown hook
        // is too late: the DataNode then fails to unregister its own Hadoop shutdown hooks).
        final File readyFile = ready;
        sun.misc.SignalHandler stop = sig -> {
            if (readyFile != null) {
                readyFile.delete();
            }
            System.out.println("CtlakeMiniDfs: SIG" + sig.getName() + ", shutting down");
            try {
                // not cluster.shutdown(): it marks the whole base folder for deletion on exit
                cluster.shutdownDataNodes();
                cluster.shutdownNameNodes();
            } finally {
                System.out.println("CtlakeMiniDfs: stopped");
                System.exit(0);
            }
        };
        sun.misc.Signal.handle(new sun.misc.Signal("TERM"), stop);
        sun.misc.Signal.handle(new sun.misc.Signal("INT"), stop);
        System.out.println("CtlakeMiniDfs: up at " + cluster.getURI() + " (web UI http://127.0.0.1:" + httpPort + ")");
        if (ready != null) {
            writeAtomically(ready, Long.toString(ProcessHandle.current().pid()) + "\n");
        }
        Thread.currentThread().join();
    }

    private static void writeAtomically(File target, String text) throws IOException {
        File tmp = new File(target.getPath() + ".tmp");
        Files.write(tmp.toPath(), text.getBytes(StandardCharsets.UTF_8));
        Files.move(tmp.toPath(), target.toPath(), StandardCopyOption.ATOMIC_MOVE, StandardCopyOption.REPLACE_EXISTING);
    }
}
