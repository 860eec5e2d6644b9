//! A [`ListQuery`] as SQL: the scope and every filter predicate become WHERE conditions, the
//! sort key and id the ORDER BY, and the keyset cursor a row comparison `(key, id) > (...)`,
//! which PostgreSQL reads as a range of the scope's index on (key, id). So a page of the
//! indexed orders (created_at, display_name, finished_at; state and storage_state filters in
//! created_at order) reads about a page of an index; other sorts and filters are answered by
//! PostgreSQL's own plan (a scan of the scope, as in the embedded store).
//!
//! total_size comes from the `counts` rows when the filter tests only state and storage_state
//! ([`Filter::count_from`]), otherwise from a COUNT over scope and filter.

use tokio_postgres::types::{ToSql, Type};

use super::{catalog, rows};
use crate::error::{Error, Result};
use crate::query::filter::{Filter, Op, Operand, Predicate};
use crate::query::{Field, ListQuery, Position, Scope, SortValue};

/// Which table a listing reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Table {
    Runs,
    Experiments,
    /// The records of one kind in `catalog` (its code: [`catalog::PIPELINE`], ...).
    Catalog(u8),
}

/// Where a field's value is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Columns {
    Text(&'static str),
    Time(&'static str, &'static str),
    /// Not a field of this record: the empty text (what [`crate::query::Record::field`] says).
    Empty,
}

impl Table {
    fn from(self) -> &'static str {
        match self {
            Table::Runs => "runs r",
            Table::Experiments => "experiments r",
            Table::Catalog(_) => "catalog r",
        }
    }

    fn id(self) -> &'static str {
        match self {
            Table::Runs => "r.run_id",
            Table::Experiments => "r.experiment_id",
            Table::Catalog(_) => "r.id",
        }
    }

    fn read_columns(self) -> String {
        match self {
            Table::Runs => rows::RUN_READ_COLUMNS.to_owned(),
            Table::Catalog(_) => catalog::CATALOG_READ_COLUMNS.to_owned(),
            Table::Experiments => rows::EXPERIMENT_READ_COLUMNS
                .split(", ")
                .map(|c| format!("r.{c}"))
                .collect::<Vec<_>>()
                .join(", "),
        }
    }

    /// How many columns [`Table::read_columns`] selects (see [`rows::run_from_row`]).
    fn read_width(self) -> usize {
        match self {
            Table::Runs | Table::Catalog(_) => 5,
            Table::Experiments => rows::EXPERIMENT_READ_COLUMNS.split(", ").count(),
        }
    }

    fn columns(self, field: Field) -> Columns {
        use Columns::*;
        if let Table::Catalog(_) = self {
            // Every field a catalog kind has is a column (one it lacks holds "").
            return match field {
                Field::Id => Text("r.id"),
                Field::Name => Text("r.name"),
                Field::DisplayName => Text("r.display_name"),
                Field::Description => Text("r.description"),
                Field::Namespace => Text("r.namespace"),
                Field::ExperimentId => Text("r.experiment_id"),
                Field::PipelineId => Text("r.pipeline_id"),
                Field::PipelineVersionId => Text("r.pipeline_version_id"),
                Field::ServiceAccount => Text("r.service_account"),
                Field::Status => Text("r.status"),
                Field::CreatedAt => Time("r.created_s", "r.created_ns"),
                Field::UpdatedAt => Time("r.updated_s", "r.updated_ns"),
                _ => Empty,
            };
        }
        match (self, field) {
            (Table::Runs, Field::Id) => Text("r.run_id"),
            (Table::Experiments, Field::Id) => Text("r.experiment_id"),
            (_, Field::DisplayName) => Text("r.display_name"),
            (_, Field::Description) => Text("r.description"),
            (_, Field::Namespace) => Text("r.namespace"),
            (_, Field::StorageState) => Text("r.storage_state"),
            (_, Field::CreatedAt) => Time("r.created_s", "r.created_ns"),
            (Table::Runs, Field::ScheduledAt) => Time("r.scheduled_s", "r.scheduled_ns"),
            (Table::Runs, Field::FinishedAt) => Time("r.finished_s", "r.finished_ns"),
            (Table::Runs, Field::State) => Text("r.state"),
            (Table::Runs, Field::ExperimentId) => Text("r.experiment_id"),
            (Table::Runs, Field::RecurringRunId) => Text("r.recurring_run_id"),
            (Table::Runs, Field::PipelineId) => Text("r.pipeline_id"),
            (Table::Runs, Field::PipelineVersionId) => Text("r.pipeline_version_id"),
            (Table::Runs, Field::ServiceAccount) => Text("r.service_account"),
            (Table::Experiments, Field::LastRunCreatedAt) => Time("r.last_run_s", "r.last_run_ns"),
            _ => Empty,
        }
    }

    /// The scope as conditions (none: every record).
    fn scope(self, scope: &Scope, sql: &mut Sql) -> Result<Vec<String>> {
        let mut conditions = Vec::new();
        if let Table::Catalog(code) = self {
            // A constant of ours, not a client's value: written out, so that the kind's
            // partial indexes apply.
            conditions.push(format!("r.kind = '{}'", code as char));
        }
        let column = match (self, scope) {
            (Table::Catalog(catalog::PIPELINE), Scope::All) => {
                return Err(Error::internal("pipelines are listed by namespace"));
            }
            (_, Scope::All) => return Ok(conditions),
            (_, Scope::Namespace(ns)) => ("r.namespace", ns),
            (Table::Runs, Scope::Experiment(id))
            | (Table::Catalog(catalog::RECURRING_RUN), Scope::Experiment(id)) => {
                ("r.experiment_id", id)
            }
            (Table::Catalog(catalog::PIPELINE_VERSION), Scope::Pipeline(id)) => {
                ("r.pipeline_id", id)
            }
            _ => {
                return Err(Error::internal(format!(
                    "{scope:?} is not a scope the store lists {self:?} in"
                )));
            }
        };
        let p = sql.bytes(column.1.as_bytes().to_vec());
        conditions.push(format!("{} = {p}", column.0));
        Ok(conditions)
    }
}

/// A statement being built, with its parameters (types given, so it runs in one round trip
/// without a prepare).
#[derive(Default)]
pub struct Sql {
    pub text: String,
    params: Vec<Param>,
}

enum Param {
    Bytes(Vec<u8>),
    BytesList(Vec<Vec<u8>>),
    Int8(i64),
    Int4(i32),
}

impl Sql {
    fn push(&mut self, param: Param) -> String {
        self.params.push(param);
        format!("${}", self.params.len())
    }

    fn bytes(&mut self, value: Vec<u8>) -> String {
        self.push(Param::Bytes(value))
    }

    fn time(&mut self, (seconds, nanos): (i64, i32)) -> (String, String) {
        (
            self.push(Param::Int8(seconds)),
            self.push(Param::Int4(nanos)),
        )
    }

    /// The parameters with their types, for `query_typed`.
    pub fn params(&self) -> Vec<(&(dyn ToSql + Sync), Type)> {
        self.params
            .iter()
            .map(|p| match p {
                Param::Bytes(v) => (v as &(dyn ToSql + Sync), Type::BYTEA),
                Param::BytesList(v) => (v as &(dyn ToSql + Sync), Type::BYTEA_ARRAY),
                Param::Int8(v) => (v as &(dyn ToSql + Sync), Type::INT8),
                Param::Int4(v) => (v as &(dyn ToSql + Sync), Type::INT4),
            })
            .collect()
    }
}

/// The WHERE conditions of scope and filter.
fn conditions(table: Table, scope: &Scope, filter: &Filter, sql: &mut Sql) -> Result<Vec<String>> {
    let mut conditions = table.scope(scope, sql)?;
    for predicate in &filter.predicates {
        conditions.push(predicate_sql(table, predicate, sql));
    }
    Ok(conditions)
}

fn predicate_sql(table: Table, p: &Predicate, sql: &mut Sql) -> String {
    let compare = |op: Op| match op {
        Op::Eq => "=",
        Op::Ne => "<>",
        Op::Gt => ">",
        Op::Ge => ">=",
        Op::Lt => "<",
        Op::Le => "<=",
        // Not comparisons; handled apart.
        Op::In | Op::Substring => "=",
    };
    let tag_column;
    let text_column = match (table.columns(p.field), &p.tag) {
        // A record without the tag compares as the empty text.
        (_, Some(key)) => {
            let key = sql.bytes(key.as_bytes().to_vec());
            tag_column = format!(
                "coalesce((SELECT t.value FROM catalog_tags t \
                 WHERE t.kind = r.kind AND t.id = r.id AND t.key = {key}), ''::bytea)"
            );
            &tag_column
        }
        (Columns::Text(c), None) => c,
        (Columns::Empty, None) => "''::bytea",
        (Columns::Time(s, ns), None) => {
            let Operand::Time(t) = &p.operand else {
                return "false".to_owned();
            };
            let (ts, tns) = sql.time(rows::time(Some(*t)));
            return format!("({s}, {ns}) {} ({ts}, {tns})", compare(p.op));
        }
    };
    match (&p.operand, p.op) {
        (Operand::Text(v), Op::Substring) => {
            let v = sql.bytes(v.as_bytes().to_vec());
            format!("position({v} in {text_column}) > 0")
        }
        (Operand::Text(v), op) => {
            let v = sql.bytes(v.as_bytes().to_vec());
            format!("{text_column} {} {v}", compare(op))
        }
        (Operand::TextList(list), _) => {
            let v = sql.push(Param::BytesList(
                list.iter().map(|s| s.as_bytes().to_vec()).collect(),
            ));
            format!("{text_column} = ANY({v})")
        }
        // Kinds are checked when the filter is parsed; a mismatch matches nothing.
        (Operand::Time(_), _) => "false".to_owned(),
    }
}

/// The (state, storage_state) values of one group of runs, as stored (enum names).
pub type Group = (Vec<u8>, Vec<u8>);

/// The statement reading one page of `query` (page_size + 1 rows, to know whether more
/// follow), and where its sort columns start in each row.
///
/// `groups`: for a runs page in created_at order whose filter tests state or storage_state,
/// the (state, storage_state) groups of the scope that the filter admits. The page is then the
/// merge of one index range per group (scope, state, storage_state, created_at, id), each read
/// for at most a page: O(groups × page) whatever the scope's size, where a single range of a
/// state index would skip every run of the other storage state, and `state IN (...)` would read
/// every match to sort them.
pub fn page(table: Table, query: &ListQuery, groups: Option<&[Group]>) -> Result<(Sql, usize)> {
    let mut sql = Sql::default();
    let mut conditions = conditions(table, &query.scope, &query.filter, &mut sql)?;
    let id = table.id();
    let (order, sort_columns, is_time) = match table.columns(query.sort.field) {
        Columns::Text(c) if c == id => (vec![], vec![], false),
        Columns::Text(c) => (vec![c], vec![c], false),
        Columns::Time(s, ns) => (vec![s, ns], vec![s, ns], true),
        Columns::Empty => (vec![], vec!["''::bytea"], false),
    };
    let (dir, cmp) = if query.sort.descending {
        ("DESC", "<")
    } else {
        ("ASC", ">")
    };
    if let Some(after) = &query.after {
        conditions.push(cursor(&order, id, cmp, after, is_time, &mut sql)?);
    }
    let order_by = |prefix: &str| {
        let mut order_by: Vec<String> = order
            .iter()
            .map(|c| format!("{prefix}{} {dir}", unqualified(c)))
            .collect();
        order_by.push(format!("{prefix}{} {dir}", unqualified(id)));
        order_by.join(", ")
    };
    let select_sort = if sort_columns.is_empty() {
        id.to_owned()
    } else {
        sort_columns.join(", ")
    };
    let limit = sql.push(Param::Int8(query.page_size as i64 + 1));
    let groups = match groups {
        Some(groups) if table == Table::Runs && query.sort.field == Field::CreatedAt => groups,
        _ => {
            sql.text = format!(
                "SELECT {}, {select_sort} FROM {} {} ORDER BY {} LIMIT {limit}",
                table.read_columns(),
                table.from(),
                where_clause(&conditions),
                order_by("r."),
            );
            return Ok((sql, table.read_width()));
        }
    };
    let mut branches = Vec::new();
    for (state, storage_state) in groups {
        let mut branch = conditions.clone();
        branch.push(format!("r.state = {}", sql.bytes(state.clone())));
        branch.push(format!(
            "r.storage_state = {}",
            sql.bytes(storage_state.clone())
        ));
        branches.push(format!(
            "(SELECT {GROUP_COLUMNS} FROM runs r {} ORDER BY {} LIMIT {limit})",
            where_clause(&branch),
            order_by("r."),
        ));
    }
    if branches.is_empty() {
        // No run of the scope can match: a statement of the same shape that reads nothing.
        branches.push(format!("(SELECT {GROUP_COLUMNS} FROM runs r WHERE false)"));
    }
    sql.text = format!(
        "SELECT u.run_id, u.revision, u.record, u.spec_digest, \
         (SELECT s.bytes FROM specs s WHERE s.digest = u.spec_digest), u.created_s, u.created_ns \
         FROM ({}) u ORDER BY {} LIMIT {limit}",
        branches.join(" UNION ALL "),
        order_by("u."),
    );
    Ok((sql, table.read_width()))
}

/// What a branch of a page merged from groups selects: the outer query adds the spec.
const GROUP_COLUMNS: &str =
    "r.run_id, r.revision, r.record, r.spec_digest, r.created_s, r.created_ns";

/// A column without its table alias (`r.run_id` -> `run_id`).
fn unqualified(column: &str) -> &str {
    column.split_once('.').map_or(column, |(_, c)| c)
}

/// `(key..., id) > (after...)`: strictly after the previous page's last record.
fn cursor(
    order: &[&str],
    id: &str,
    cmp: &str,
    after: &Position,
    is_time: bool,
    sql: &mut Sql,
) -> Result<String> {
    let mut columns: Vec<&str> = order.to_vec();
    let mut values = Vec::new();
    match (&after.value, order.len(), is_time) {
        (_, 0, _) => {}
        (SortValue::Text(t), 1, false) => values.push(sql.bytes(t.as_bytes().to_vec())),
        (SortValue::Time(t), 2, true) => {
            let ts = t.map(|(seconds, nanos)| crate::wkt::Timestamp { seconds, nanos });
            let (s, ns) = sql.time(rows::time(ts));
            values.push(s);
            values.push(ns);
        }
        _ => {
            return Err(Error::invalid(
                "page_token does not fit its sort key; start again from the first page",
            ));
        }
    }
    columns.push(id);
    values.push(sql.bytes(after.id.as_bytes().to_vec()));
    Ok(format!(
        "({}) {cmp} ({})",
        columns.join(", "),
        values.join(", ")
    ))
}

/// The statement counting the records of scope and filter.
pub fn count(table: Table, scope: &Scope, filter: &Filter) -> Result<Sql> {
    let mut sql = Sql::default();
    let conditions = conditions(table, scope, filter, &mut sql)?;
    sql.text = format!(
        "SELECT count(*) FROM {} {}",
        table.from(),
        where_clause(&conditions)
    );
    Ok(sql)
}

fn where_clause(conditions: &[String]) -> String {
    if conditions.is_empty() {
        String::new()
    } else {
        format!("WHERE {}", conditions.join(" AND "))
    }
}

/// The position of a listed row, from the sort columns selected at `first`.
pub fn position(
    table: Table,
    query: &ListQuery,
    row: &tokio_postgres::Row,
    first: usize,
    id: &str,
) -> Result<Position> {
    let value = match table.columns(query.sort.field) {
        Columns::Time(..) => rows::sort_value(row, first, true)?,
        Columns::Text(c) if c == table.id() => SortValue::Text(id.to_owned()),
        Columns::Text(_) | Columns::Empty => rows::sort_value(row, first, false)?,
    };
    Ok(Position {
        value,
        id: id.to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::Run;
    use crate::query::sort::Sort;

    fn query(sort: &str, filter: &str, after: Option<Position>) -> ListQuery {
        ListQuery {
            scope: Scope::Namespace("ns".into()),
            sort: Sort::parse::<Run>(sort).unwrap(),
            filter: Filter::parse::<Run>(filter).unwrap(),
            after,
            page_size: 20,
        }
    }

    #[test]
    fn a_created_at_page_is_a_keyset_range_of_the_scope() {
        let after = Position {
            value: SortValue::Time(Some((10, 5))),
            id: "r9".into(),
        };
        let (sql, _) = page(
            Table::Runs,
            &query("created_at desc", "", Some(after)),
            None,
        )
        .unwrap();
        assert!(
            sql.text.contains(
                "WHERE r.namespace = $1 AND (r.created_s, r.created_ns, r.run_id) < ($2, $3, $4)"
            ),
            "{}",
            sql.text
        );
        assert!(
            sql.text
                .contains("ORDER BY r.created_s DESC, r.created_ns DESC, r.run_id DESC LIMIT $5"),
            "{}",
            sql.text
        );
        assert_eq!(sql.params().len(), 5);
    }

    #[test]
    fn filters_become_conditions_with_parameters() {
        let filter = r#"{"predicates":[
            {"operation":"IN","key":"state","string_values":{"values":["RUNNING","PENDING"]}},
            {"operation":"IS_SUBSTRING","key":"name","string_value":"x'; drop"},
            {"operation":"LESS_THAN","key":"finished_at","timestamp_value":"1970-01-01T00:00:01Z"}]}"#;
        let (sql, _) = page(Table::Runs, &query("name", filter, None), None).unwrap();
        assert!(sql.text.contains("r.state = ANY($2)"), "{}", sql.text);
        assert!(
            sql.text.contains("position($3 in r.display_name) > 0"),
            "{}",
            sql.text
        );
        assert!(
            sql.text
                .contains("(r.finished_s, r.finished_ns) < ($4, $5)"),
            "{}",
            sql.text
        );
        assert!(!sql.text.contains("drop"), "values are parameters");
    }

    #[test]
    fn a_state_filter_in_creation_order_merges_a_bounded_range_per_group() {
        let filter = r#"{"predicates":[
            {"operation":"IN","key":"state","string_values":{"values":["RUNNING","PENDING"]}},
            {"operation":"IS_SUBSTRING","key":"name","string_value":"x"}]}"#;
        let groups: Vec<Group> = vec![
            (b"RUNNING".to_vec(), b"AVAILABLE".to_vec()),
            (b"PENDING".to_vec(), b"ARCHIVED".to_vec()),
        ];
        let after = Position {
            value: SortValue::Time(Some((10, 5))),
            id: "r9".into(),
        };
        let q = query("created_at desc", filter, Some(after));
        let (sql, _) = page(Table::Runs, &q, Some(&groups)).unwrap();
        let branches: Vec<&str> = sql.text.split(" UNION ALL ").collect();
        assert_eq!(branches.len(), 2, "{}", sql.text);
        for branch in &branches {
            // Scope, filter, cursor, group: one range of the group index, at most a page of it.
            for part in [
                "r.namespace = $1",
                "r.state = ANY($2)",
                "position($3 in r.display_name) > 0",
                "(r.created_s, r.created_ns, r.run_id) < ($4, $5, $6)",
                "ORDER BY r.created_s DESC, r.created_ns DESC, r.run_id DESC LIMIT $7)",
            ] {
                assert!(branch.contains(part), "{part} in {branch}");
            }
        }
        assert!(branches[0].contains("r.state = $8 AND r.storage_state = $9"));
        assert!(branches[1].contains("r.state = $10 AND r.storage_state = $11"));
        assert!(
            sql.text
                .ends_with("ORDER BY u.created_s DESC, u.created_ns DESC, u.run_id DESC LIMIT $7"),
            "{}",
            sql.text
        );
        assert_eq!(sql.params().len(), 11);
        // No group admitted: nothing to read.
        let (none, _) = page(Table::Runs, &q, Some(&[])).unwrap();
        assert!(none.text.contains("WHERE false"), "{}", none.text);
        // Another sort: the plain statement, whatever the groups.
        let (by_name, _) = page(Table::Runs, &query("name", filter, None), Some(&groups)).unwrap();
        assert!(!by_name.text.contains("UNION"), "{}", by_name.text);
    }

    #[test]
    fn a_cursor_of_the_wrong_kind_is_refused() {
        let after = Position {
            value: SortValue::Text("x".into()),
            id: "r".into(),
        };
        let err = page(Table::Runs, &query("created_at", "", Some(after)), None)
            .err()
            .unwrap();
        assert!(matches!(err, Error::InvalidArgument(_)));
    }
}
