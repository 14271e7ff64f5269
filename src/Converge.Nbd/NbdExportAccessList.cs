using System.Collections.Frozen;

namespace Converge.Nbd;

/// <summary>
/// Access lists by export name: an export with a rule admits only the identities it names; an export without one admits
/// every client the TLS mode admits. Names compare ordinally (export names and certificate CNs are case-sensitive).
/// </summary>
public sealed class NbdExportAccessList : INbdExportAuthorizer
{
    private readonly FrozenDictionary<string, FrozenSet<string>> _rules;

    public NbdExportAccessList(IReadOnlyDictionary<string, IReadOnlyCollection<string>> rules)
    {
        ArgumentNullException.ThrowIfNull(rules);
        _rules = rules.ToFrozenDictionary(r => r.Key, r => r.Value.ToFrozenSet(StringComparer.Ordinal), StringComparer.Ordinal);
    }

    public bool IsEmpty => _rules.Count == 0;

    public bool IsAllowed(string exportName, NbdClientIdentity? client) =>
        !_rules.TryGetValue(exportName, out var allowed) || (client is not null && allowed.Contains(client.Name));

    /// <summary>Parses rules written as <c>EXPORT=ID[,ID...]</c>; a repeated export adds identities to its rule.</summary>
    /// <exception cref="FormatException">A rule is malformed; the message quotes it.</exception>
    public static NbdExportAccessList Parse(IEnumerable<string> rules)
    {
        ArgumentNullException.ThrowIfNull(rules);
        var parsed = new Dictionary<string, HashSet<string>>(StringComparer.Ordinal);
        foreach (var rule in rules)
        {
            var equals = rule.IndexOf('=', StringComparison.Ordinal);
            if (equals <= 0)
            {
                throw new FormatException($"'{rule}' is not EXPORT=ID[,ID...]");
            }

            var ids = rule[(equals + 1)..].Split(',', StringSplitOptions.TrimEntries);
            if (ids.Any(string.IsNullOrEmpty))
            {
                throw new FormatException($"'{rule}' names an empty identity; give EXPORT=ID[,ID...]");
            }

            var export = rule[..equals].Trim();
            if (!parsed.TryGetValue(export, out var set))
            {
                parsed[export] = set = new HashSet<string>(StringComparer.Ordinal);
            }

            set.UnionWith(ids);
        }

        return new NbdExportAccessList(parsed.ToDictionary(p => p.Key, p => (IReadOnlyCollection<string>)p.Value, StringComparer.Ordinal));
    }
}
